"""Session engines: Django's own, with the no-resurrection guard on every save.

Use ``SESSION_ENGINE = "patient_data.sessions.<db|cached_db|cache|file|signed_cookies>"``.
"""
