"""`cardiofair app`: a browser page to explore a generator and a synthetic dataset.

:mod:`cardiofair.app.explorer` answers every question the page asks (no gradio);
:mod:`cardiofair.app.ui` is the page itself. Imports flow one way: the app uses the data,
diffusion and metrics modules, and nothing outside it imports the app.
"""
