"""Operations tools run from manage.py against local or deployed instances (never deployed)."""
