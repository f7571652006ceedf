"""Configuration files of the supporting servers, generated from the plan."""
