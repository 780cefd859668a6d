"""The web app OBS and people load: overlay, dashboard, JSON API and health.

Owns: the aiohttp application and its request handlers (``server``; ``/vibes`` and ``/api/vibes`` in
``vibes``), and everything a browser sends being checked first (``guard``: tokens, cookies, headers, query
parameters). The sockets of open overlays are held by the app and closed on shutdown.

May import: the kernel and ``bot.mood`` (the hub it subscribes to). It reaches storage and the pipeline only
through what :func:`~bot.web.server.create_overlay_app` is handed (the vibes search too). Imported by: ``bot.app``.
"""
