"""Flask-WTF forms: every page form carries a CSRF token."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Length


class LoginForm(FlaskForm):
    interaction = HiddenField()
    username = StringField("Username", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=256)])


class ConsentForm(FlaskForm):
    interaction = HiddenField(validators=[DataRequired(), Length(max=64)])


class LogoutForm(FlaskForm):
    pass


class ActionForm(FlaskForm):
    """A button that changes something (revoke, remove): only the CSRF token."""
