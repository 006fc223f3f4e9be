"""Helpers shared by the tests: apps and API steps (apps.py), signals (audio.py),
real servers started the way users start them (live.py, procs.py, proxy.py),
tiny models (demucs_repo.py, musicgen_models.py) and the like. Fixtures stay in
the conftest.py files; test modules import from here, never from each other."""
