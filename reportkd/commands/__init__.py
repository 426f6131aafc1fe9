"""One module per ``reportkd`` command (``add_arguments`` + ``run``)."""
