"""The app's pages. Each module has one ``render`` function taking the session's
:class:`~app.state.ModelContext` (``app/ui.py`` binds it when it builds the navigation); they
stay thin and call :mod:`app.results`, :mod:`app.card_text` and :mod:`app.model_source` for
anything that is not layout."""
