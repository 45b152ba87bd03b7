"""The commands people type: `mnist-serving` and its subcommands (render, crd,
reference, compare). May import every layer below."""
