-- Incidents per rule and week with their precision from on-call feedback
SELECT week, rule, severity, incidents, true_positives, false_positives, unrated, precision, median_minutes_open
FROM raiwatch.incidents_weekly
ORDER BY week, incidents DESC, rule
