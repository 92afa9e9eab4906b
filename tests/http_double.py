"""What the HTTP test doubles share: a threaded HTTP server on a free localhost port, in a
daemon thread, and its stop."""
import http.server
import threading


class QuietHandler(http.server.BaseHTTPRequestHandler):
  """A request handler that keeps the test output free of its access log."""

  def log_message(self, *args):
    pass


def start(handler) -> tuple:
  """(server, 'http://127.0.0.1:PORT') of a server of `handler` (a BaseHTTPRequestHandler
  class), serving until stop(server)."""
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  server.daemon_threads = True
  # Polls for shutdown every 0.05 s (the default 0.5 s made each test's teardown wait).
  threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
  return server, f'http://127.0.0.1:{server.server_address[1]}'


def stop(server) -> None:
  server.shutdown()
  server.server_close()
