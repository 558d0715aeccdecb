"""Subcommands of the ``dcmif`` console command, one module each (see ``dcmif_ros.cli``)."""
