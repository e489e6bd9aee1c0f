"""The rooms of the Workspace facade: one mixin class per room, that :class:`Workspace
<idstitch.Workspace>` composes (``idstitch/workspace.py`` keeps its construction, its settings
and its lifecycle, and ``open()``).

Each room only builds commands and calls the bus, or asks a service. Each is guarded at the
argument boundary on its own (``@checked_methods`` guards the body of the class it decorates);
the attributes a room reads are declared on it and set by ``Workspace.__init__``.
"""
