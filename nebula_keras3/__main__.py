from nebula_keras3.cli import main

main(prog_name="nebula")
