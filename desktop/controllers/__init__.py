"""The window's controllers: each wires one job's widgets to the core through the bridges.

The main window builds the widgets and assembles these; none of them implements a use case (the
core session does) or touches another widget's private parts.
"""
