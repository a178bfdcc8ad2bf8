-- The smallest insert, for PostgreSQL's own commit rate (see bench/pg_bound.sh).
INSERT INTO t (v) VALUES ('x');
