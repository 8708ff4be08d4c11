"""release_files: targets built optimised (-c opt), whatever the command line says.

What gets installed (the Debian package, its test) is the optimised build.
The transition also clears --copt/--linkopt, so a sanitizer configuration
(--config=asan) does not leak into the packaged binaries and every
configuration shares one optimised build.
"""

def _opt_impl(settings, attr):
    return {
        "//command_line_option:compilation_mode": "opt",
        "//command_line_option:copt": [],
        "//command_line_option:linkopt": [],
    }

_opt = transition(
    implementation = _opt_impl,
    inputs = [],
    outputs = [
        "//command_line_option:compilation_mode",
        "//command_line_option:copt",
        "//command_line_option:linkopt",
    ],
)

def _release_files_impl(ctx):
    files = depset(transitive = [dep[DefaultInfo].files for dep in ctx.attr.srcs])
    return [DefaultInfo(files = files, runfiles = ctx.runfiles(transitive_files = files))]

release_files = rule(
    implementation = _release_files_impl,
    attrs = {
        "srcs": attr.label_list(cfg = _opt),
        "_allowlist_function_transition": attr.label(
            default = "@bazel_tools//tools/allowlists/function_transition_allowlist",
        ),
    },
)
