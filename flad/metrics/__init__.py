"""What ops teams scrape: the OpenMetrics / Prometheus endpoint of a running flad.

- `instruments`: the figures only the running process knows (connections, uploads,
  polls), as prometheus_client counters, gauges and a histogram;
- `collector`: the figures the journal knows (files per state and their ages, each
  state change counted once, certificate lifetimes), read at scrape time;
- `kinds`: a rejection reason or a connection error to a small label value;
- `server`: `/metrics`, `/healthz` and `/readyz` on `[daemon] metrics_listen`.
"""
