"""The transcript record: every final of every session, kept, readable and exportable.

``config``   TRANSCRIPT_STORE -> database URL; startup checks
``schema``   tables and migrations (SQLite and PostgreSQL alike)
``db``       blocking queries, run in worker threads
``writer``   the bounded write queue between the event loop and the database
``recorder`` session lifecycle -> records; sweeps, retention; the lifespan part
``hooks``    the one-line calls the session modules make
``tail``     the desktop's lost tail (audio of a detached session, no start_session)
``export``   merged transcript in json, md, srt, vtt, txt
``webhook``  TRANSCRIPT_WEBHOOK_URL: signed POST when a session ends
``api``      the /v1/sessions routes

Importing this package stays cheap: the session modules import ``hooks`` only.
"""
