"""Command-line interface: thin Click commands over the library, one `Output` sink."""
