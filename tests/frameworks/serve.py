"""Start one of the test apps on 127.0.0.1, on a port the OS picks, and
print `listening PORT` once it accepts connections:

    python serve.py django   # TG_DJANGO_DB=DIR; migrates, creates the users
    python serve.py flask

It serves until it is killed (tests/frameworks.rs stops it), or until its
stdin closes, so that it never outlives the test that started it."""

import os
import sys
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def django_app():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application

    call_command("migrate", verbosity=0, interactive=False)
    # A staff user whose username is an e-mail address: the lead.
    User.objects.create_superuser("ada@example.com", "ada@example.com", "correct horse battery")
    return get_wsgi_application()


def flask_app():
    from flask_signup import app

    return app


def main():
    kind = sys.argv[1]
    app = {"django": django_app, "flask": flask_app}[kind]()
    server = make_server("127.0.0.1", 0, app, server_class=Server, handler_class=QuietHandler)
    print(f"listening {server.server_address[1]}", flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
