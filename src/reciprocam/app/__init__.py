"""`reciprocam app`: an interactive page that explains photos in the browser (Gradio).

`launch` serves it for the command line; `build_app` builds the page (for tests and notebooks).
Needs the `app` extra: pip install 'reciprocam[app]'.
"""

from .page import build_app
from .serve import binding_message, launch

__all__ = ["binding_message", "build_app", "launch"]
