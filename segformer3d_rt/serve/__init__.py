"""`serve`: many named streams through one batched network, watched in a browser, scraped by Prometheus.

Where each stage lives (data flows top to bottom)::

    stream.py   each stream's capture thread: source -> preprocess -> its one-frame Mailbox (newest wins)
    batcher.py  one thread: takes up to max-batch frames round-robin from the mailboxes -> the network -> each
                stream's results slot
    stream.py   each stream's render thread: results -> rendered frame -> its LatestFrame slot (+ recording)
    hub.py      the set of streams: add / remove / restart while the server runs
    web.py      the HTTP side (FastAPI): REST API, MJPEG, WebRTC offers, live stats, /metrics
    page.py     the browser viewer;  metrics.py  the Prometheus collector;  webrtc.py  the aiortc track
    config.py   the typed settings (ServeConfig, StreamSpec)

Viewers only ever read a LatestFrame slot, so however many watch, nothing queues and no inference is added.
"""
