"""Celery entry point: ``celery -A celery_worker worker -Q separation,transcription,generation``."""

from app import create_app
from app.metrics import setup_multiprocess

# Before any task runs or any child forks: the job durations and model load
# times of every worker process go to files the API's /metrics sums.
setup_multiprocess()

flask_app = create_app()
celery_app = flask_app.extensions["celery"]
