"""Celery entry point: ``celery -A celery_worker worker -Q separation,transcription,generation``."""

from app import create_app

flask_app = create_app()
celery_app = flask_app.extensions["celery"]
