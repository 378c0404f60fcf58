"""Configs of the stick-breaking length-generalisation experiments (`get_config(arg)` in each file)."""
