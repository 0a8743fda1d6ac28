"""Close the loop: which randomization causes the sim-to-real gap (attribution), tune the scene to
close it (search), and check that the tuned scene trains a better model (verify): ``sim2real tune``."""
