#!/usr/bin/env python3
"""Static checks for Dockerfile and docker-compose.yml: there is no Docker
engine on CI, so what a reviewer would check by eye is checked here."""

import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLIC_ENV = {
    "RISKGATE_LISTEN", "RISKGATE_DATABASE_URL", "RISKGATE_POLICY", "RISKGATE_API_KEYS",
    "ROUNDTABLE_API_URL", "ROUNDTABLE_API_KEY", "ROUNDTABLE_API_VERSION",
    "RUST_LOG", "RISKGATE_LOG_FORMAT",
}
errors = []


def check(condition, message):
    if not condition:
        errors.append(message)


def dockerfile():
    text = open(os.path.join(ROOT, "Dockerfile")).read()
    lines = [l.strip() for l in re.sub(r"\\\n", " ", text).splitlines() if l.strip() and not l.startswith("#")]
    stages = [l for l in lines if l.upper().startswith("FROM ")]
    check(len(stages) >= 2, "Dockerfile: expected a multi-stage build")
    final = lines[lines.index(stages[-1]):]
    users = [l.split()[1] for l in final if l.upper().startswith("USER ")]
    check(users and users[-1].split(":")[0] not in ("root", "0"), "Dockerfile: final stage must run as a non-root USER")
    check(any(l.startswith("COPY --from=") for l in final), "Dockerfile: final stage must copy the binary from the build stage")
    check(any("--locked" in l for l in lines if "cargo build" in l), "Dockerfile: cargo build must use --locked")
    for line in lines:
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                check(os.path.exists(os.path.join(ROOT, source)), f"Dockerfile: COPY source {source} does not exist")
    check(any(l.startswith("EXPOSE 8080") for l in final), "Dockerfile: EXPOSE 8080")
    check(any(l.startswith("HEALTHCHECK") and "/healthz" in l for l in final), "Dockerfile: HEALTHCHECK on /healthz")


def compose():
    doc = yaml.safe_load(open(os.path.join(ROOT, "docker-compose.yml")))
    services = doc.get("services", {})
    check({"postgres", "riskgate"} <= set(services), "compose: services postgres and riskgate")
    for name, service in services.items():
        check("healthcheck" in service, f"compose: {name} needs a healthcheck")
    app = services.get("riskgate", {})
    check(app.get("depends_on", {}).get("postgres", {}).get("condition") == "service_healthy",
          "compose: riskgate must wait for a healthy postgres")
    env = app.get("environment", {})
    for key in env:
        check(key in PUBLIC_ENV or key.startswith("RISKGATE_"), f"compose: unknown setting {key}")
    url = env.get("RISKGATE_DATABASE_URL", "")
    pg = services.get("postgres", {}).get("environment", {})
    expected = f"postgres://{pg.get('POSTGRES_USER')}:{pg.get('POSTGRES_PASSWORD')}@postgres:5432/{pg.get('POSTGRES_DB')}"
    check(url == expected, f"compose: RISKGATE_DATABASE_URL {url!r} does not match the postgres service ({expected!r})")
    listen_port = env.get("RISKGATE_LISTEN", "").rsplit(":", 1)[-1]
    check(any(str(p).endswith(f":{listen_port}") for p in app.get("ports", [])),
          "compose: published port must match RISKGATE_LISTEN")


dockerfile()
compose()
if errors:
    print("packaging checks failed:\n  " + "\n  ".join(errors))
    sys.exit(1)
print("packaging checks passed")
