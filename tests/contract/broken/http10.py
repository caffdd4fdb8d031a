"""Not broken, only slow: HTTP/1.0, a new connection for every request. The
checker passes it with a warning (http.keep-alive)."""
import base

base.serve(base.Backend(), protocol="HTTP/1.0")
