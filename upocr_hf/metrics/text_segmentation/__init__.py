"""evaluate module folder: `evaluate.load()` reads the script named like this folder."""
