"""The bedside screens: one module per step of the treatment workflow (login to record and recovery).

Screens render what the core publishes and send commands the core validates; they hold no safety
logic and never talk to drivers.
"""
