"""The identity model: events, the Device aggregate, input rules and attribute rules. No I/O."""
