"""siocluster supervisor: the master process, its CLI, config and admin endpoint."""
