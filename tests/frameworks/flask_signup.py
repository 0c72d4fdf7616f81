"""A Flask + Flask-WTF signup that follows Post/Redirect/Get: an invalid
post (a bad e-mail, or no CSRF token: FlaskForm checks it as one of the
form's fields) is flashed and redirected back to /signup, a valid one
redirected to /thanks. /api/leads is a JSON API answering 422 or 201."""

from flask import Flask, flash, get_flashed_messages, jsonify, redirect, render_template_string, request, url_for
from flask_wtf import FlaskForm
from wtforms import SelectField, StringField
from wtforms.validators import DataRequired, Regexp

app = Flask(__name__)
app.config["SECRET_KEY"] = "touchgate-test-only-not-a-secret"


class SignupForm(FlaskForm):
    email = StringField("E-mail", validators=[DataRequired(), Regexp(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$", message="Enter a valid e-mail.")])
    plan = SelectField("Plan", choices=[("starter", "Starter"), ("pro", "Pro")])


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Sign up</title></head><body>
<h1>Sign up</h1>
{% for m in errors %}<p class="flash-error">{{ m }}</p>{% endfor %}
<form method="post" action="/signup">
  {{ form.csrf_token }}
  <label>E-mail {{ form.email() }}</label>
  <label>Plan {{ form.plan() }}</label>
  <button type="submit">Sign up</button>
</form></body></html>"""

THANKS = """<!doctype html>
<html><head><meta charset="utf-8"><title>Thanks</title></head><body><h1>Thanks for signing up</h1></body></html>"""


@app.route("/signup", methods=["GET", "POST"])
def signup():
    form = SignupForm()
    if request.method == "POST":
        if form.validate_on_submit():
            return redirect(url_for("thanks"))
        for field, messages in form.errors.items():
            for m in messages:
                flash(f"{field}: {m}")
        return redirect(url_for("signup"))
    return render_template_string(PAGE, form=form, errors=get_flashed_messages())


@app.route("/thanks")
def thanks():
    return THANKS


@app.route("/api/leads", methods=["POST"])
def leads():
    data = request.get_json(silent=True) or {}
    email = str(data.get("email", ""))
    if "@" not in email:
        return jsonify(error="email is invalid"), 422
    return jsonify(id=1, email_domain=email.split("@")[-1]), 201
