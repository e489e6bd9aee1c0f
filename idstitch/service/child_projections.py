"""Which custom projections the ingest's projecting child can fold: the ones it can build
itself, by ``module:qualname`` and without arguments, as this process registered them."""

from __future__ import annotations

import warnings

from idstitch.projections.base import import_topic
from idstitch.projections.custom import Projection, topic_of


def importable(projection: Projection) -> bool:
    """Whether another process can build the projection by ``module:qualname``; warns
    (naming it and why) when not."""
    topic = topic_of(projection)
    why = None
    if "<locals>" in topic or topic.startswith("__main__:"):
        why = "its class is not defined at the top level of an importable module"
    else:
        try:
            found = import_topic(topic)
        except Exception as e:
            why = f"importing it fails ({type(e).__name__}: {e})"
        else:
            why = (f"{topic} names another object" if found is not type(projection)
                   else _state_of(projection))
    if why is None:
        return True
    warnings.warn(f"custom projection {projection.name!r} ({topic}) cannot be folded by the "
                  f"projecting child: {why}; this process folds it instead",
                  RuntimeWarning, stacklevel=4)
    return False


def _state_of(projection: Projection) -> str | None:
    """Why the child's own instance, built without arguments, would not fold as this one
    does (it holds state of its own: constructed with arguments, or changed since), or None.
    An instance whose attributes cannot be compared is taken to differ."""
    try:
        fresh = type(projection)()
        same = bool(vars(fresh) == vars(projection))
    except Exception as e:
        return f"an instance built without arguments cannot be compared with it ({e})"
    if same:
        return None
    return ("this instance's attributes differ from those of one built without arguments "
            "(the child builds its own that way)")


__all__ = ["importable"]
