"""The CLI's error type, apart from cli.py: under `python -m hepbpf.cli`
that module is __main__, and an exception class defined there would not
be the one the other command modules raise."""

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NOPERM = 0, 1, 2, 77


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAIL):
        super().__init__(message)
        self.code = code
