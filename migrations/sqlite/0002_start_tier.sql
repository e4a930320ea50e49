-- A customer may start in a configured speed tier (proto Tier number: 1 fast, 2 medium, 3 slow);
-- NULL lets the controller start fast. The controller moves it from there either way.
ALTER TABLE customers ADD COLUMN start_tier INTEGER;
