"""The PySide6 desktop layer over mixtral_desk.core."""
