"""The web console: the overview, the deliveries and their requests and answers, the events,
and the actions (redeliver, test event), served from the state by Flask on waitress.

- ``app``: the Flask application, its settings and security headers;
- ``auth``: signing in (token, user and password, a trusted proxy header) and the session;
- ``views`` and ``actions``: the pages, and the POSTs that write to the state;
- ``params``, ``texts``, ``chart``: query parameters, how values are written, the SVG chart;
- ``queries``: what the console asks the store;
- ``server``: the waitress server on a daemon thread (the daemon's, or ``console``'s own).

Only this package imports Flask, waitress and Flask-WTF (the ``console`` extra).
"""
