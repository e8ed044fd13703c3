"""`appliancekit panel`: a web application for the administrator of a cloud.

- `app.py`: the Flask application (pages, forms, the JSON job pages poll);
- `auth.py`: the one password, stored as a scrypt hash, and the session key;
- `status.py`: what the pages show about a member, one small typed function per source;
- `cardform.py`: a card's per-device settings asked the way Raspberry Pi Imager asks;
- `actions.py`: the buttons' jobs, running the real build, boot test, publish and flash code;
- `jobs.py`: the background job queue and the Reporter that feeds a job's progress;
- `server.py`: waitress serving the application, on localhost by default.
"""
