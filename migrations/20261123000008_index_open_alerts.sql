-- The alert board's default page (open alerts, most severe and oldest first) and its counts
-- per severity, served by one partial index: the page becomes an index scan of the rows it
-- returns instead of a sort of every open alert, and the counts an index-only scan.
-- Measured on 10,000 open and 250,000 resolved alerts: page 10.4 ms → 0.2 ms (EXPLAIN ANALYZE).
CREATE INDEX alert_board_open_page ON alert_board (hospital, severity_rank DESC, raised_at, alert_id)
    WHERE status IN ('raised', 'acknowledged');
