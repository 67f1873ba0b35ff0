"""The app's pages. Each module has one ``render`` function; they stay thin and call
:mod:`app.services` for anything that is not layout."""
