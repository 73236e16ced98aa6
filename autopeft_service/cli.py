"""Placeholder CLI, replaced below."""
def main() -> None:
    raise SystemExit(0)
