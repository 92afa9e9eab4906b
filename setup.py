"""simclr-tfx: SimCLR pretraining as a production TFX pipeline.

Dependencies are pinned in requirements/lock.txt and installed from there
(`pip install --no-deps -r requirements/lock.txt`); install_requires names the direct ones so
that Beam's --setup_file and `pip install .` elsewhere know what the code imports.
"""
from setuptools import find_packages, setup

setup(
    name='simclr-tfx',
    version='0.1.0',
    description='SimCLR self-supervised pretraining as a TFX pipeline with TF Serving push',
    python_requires='>=3.10,<3.13',
    packages=find_packages(include=['pipeline', 'pipeline.*', 'simclr_tools', 'components',
                                    'components.*',
                                    'schemas', 'schemas.*', 'simclr_tfx']),
    package_data={'schemas': ['*.pbtxt']},
    install_requires=['tfx>=1.21,<1.22', 'tensorflow-transform', 'apache-beam', 'ml-metadata',
                      'mlxtend', 'pillow', 'pyyaml', 'scikit-learn'],
    entry_points={'console_scripts': ['simclr-tfx=simclr_tools.cli:main']},
)
