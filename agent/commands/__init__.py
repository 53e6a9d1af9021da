"""Command-line entry points that drive several pipeline stages (kept out of the stage folders
so that no stage imports one to its right)."""
