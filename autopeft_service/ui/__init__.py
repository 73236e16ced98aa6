"""The web dashboard's static files (``static/``), served by the server under ``/ui``.

No build step: plain HTML, CSS and JavaScript with hand-written SVG plots, no library.
"""

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
