"""The tools around the pipeline: the `simclr-tfx` CLI and what its subcommands use.

cli (the entry point), lineage and report (read ML Metadata; svg_graph draws the DAG),
kfp_submit and kfp_local (send a compiled Kubeflow package to a cluster, or run it here) and
serving_client (REST and gRPC to TF Serving). pipeline/ holds what they drive: the config, the
DAG and the runners.
"""
