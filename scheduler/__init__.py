"""Tayori: visit-cadence reminders and seasonal newsletters for small clinics."""
