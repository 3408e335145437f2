"""siocluster worker: serves the user's Socket.IO app on a private Unix socket."""
