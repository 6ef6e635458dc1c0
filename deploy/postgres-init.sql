-- One inbox database per example participant, next to the orchestrator's own `saga`
-- database. Every participant names its inbox table `saga_inbox`, so they cannot share a
-- database. The postgres image runs this file once, when its data volume is empty: after
-- adding a participant here, recreate the volume (`docker compose down -v`).
CREATE DATABASE inventory OWNER saga;
CREATE DATABASE payments OWNER saga;
CREATE DATABASE notifications OWNER saga;
CREATE DATABASE blobs OWNER saga;
CREATE DATABASE profiles OWNER saga;
