"""The built-in technique plugins, installed as ``viz_server_plugins``.

Each module is shaped exactly like a third-party plugin: it defines Technique classes and a
``register_techniques`` hook implementation; ``viz_server.plugins.DEFAULT_PLUGINS`` lists them.
"""
