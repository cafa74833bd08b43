"""Private helpers shared by every gradlab subpackage (typing, tree helpers, error messages)."""
