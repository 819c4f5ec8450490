"""The Adjust account side: app bindings, the App Automation API, Adjust's own
numbers, and their reconciliation with ours."""
