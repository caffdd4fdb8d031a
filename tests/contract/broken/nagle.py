"""Slow: correct answers, but with Nagle's algorithm on and each reply's head
and body in two writes (what a plain http.server handler does). On a kept-
alive connection every reply then waits for the client's delayed ACK, about
40 ms. The checker passes it with a warning (http.reply-time)."""
import base

base.serve(base.Backend(), nagle=True)
