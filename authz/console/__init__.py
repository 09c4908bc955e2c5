"""The web console (product.md §11): Jira users manage their own tokens in the browser, admins all.

``app`` builds the aiohttp application and runs it in the server's event loop; ``jira`` asks
Jira who a browser is; ``sessions`` keeps short server-side sessions; ``security`` holds the
CSRF, Origin and header rules; ``views`` the pages, each a thin layer over
``authz.admin.operations`` (no second implementation of any token rule).
"""
