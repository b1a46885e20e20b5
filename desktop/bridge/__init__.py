"""QObjects that run core work off the GUI thread and re-emit its results as Qt signals."""
