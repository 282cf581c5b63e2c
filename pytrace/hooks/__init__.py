"""Event sources.  Each module has ``install(session) -> uninstall``; see ``pytrace.session.HOOKS``."""
